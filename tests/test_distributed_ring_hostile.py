"""The ring reduction of fastdescent.distributed under hostile use: many pieces posted at once, and
communicators that are freed after a ring ran on them. Scripts under ``mpirun`` with a hard timeout
(the helpers of test_distributed.py)."""

from __future__ import annotations

import pytest

from test_distributed import mpirun, needs_mpi


@needs_mpi
@pytest.mark.parametrize("n", [2, 3])
def test_posted_ring_keeps_a_bounded_number_of_messages_in_flight(tmp_path, n):
    """A stalled (posting) ring used to post every remaining piece of a step at once: with
    ~10**5 pieces (8-byte pieces here; 16 GiB chunks at the default 256 KiB) Open MPI truncated,
    mismatched or hung, and the scratch held a whole chunk. Now at most _RING_WINDOW pieces are
    in flight and the scratch holds at most that many; sums exact (integer values), ranks
    bit-identical, in allreduce_grads and in ShardedOptimizer's (non-in-place) reduce-scatter."""
    out = mpirun(tmp_path, """
        dist._RING_PIECE = 8  # one float64 a message
        dist._RING_STALL = 0.0  # every step posts from its second piece on
        size = 150000 * N
        for avg in (False, True):
            x = np.arange(size, dtype=np.float64) % 97 + rank
            want = (np.arange(size, dtype=np.float64) % 97) * N + N * (N - 1) / 2
            if avg:
                want = want * (1.0 / N)
            dist.allreduce_grads(x, comm, average=avg, bucket_bytes=None, algorithm="ring")
            assert np.array_equal(x, want), np.flatnonzero(x != want)[:5]
            got = comm.allgather(x.tobytes())
            assert all(g == got[0] for g in got)
        scratch = dist._ring_of(comm).scratch[np.dtype(np.float64)]
        assert scratch.size <= 1024, scratch.size  # (a window of pieces, not a 150000 chunk)
        # the sharded step: the work buffer is sent and rewritten across windows
        p = np.zeros(size, np.float64)
        opt = dist.ShardedOptimizer(fd.SGD, [p], comm, lr=1.0, algorithm="ring")
        g = np.arange(size, dtype=np.float64) % 89 + rank
        g.setflags(write=False)
        opt.step([g])
        assert np.array_equal(p, -((np.arange(size) % 89) * N + N * (N - 1) / 2) * (1.0 / N))
        print("OK", rank)
    """, n=n, timeout=90)
    assert out.count("OK") == n, out


@needs_mpi
def test_freeing_a_communicator_frees_the_rings_duplicate(tmp_path):
    """The ring's Dup of a communicator is kept as its attribute; comm.Free() used to leave the
    Dup allocated (one communicator leaked per sub-communicator per epoch: MPI libraries cap
    their number). Now the attribute's delete callback frees it; a new sub-communicator gets a
    working ring, the world's ring survives to MPI_Finalize (a clean exit)."""
    out = mpirun(tmp_path, """
        x = np.full(10, rank + 1.0, np.float32)
        dist.allreduce_grads(x, comm, average=False, algorithm="ring")  # the world's own ring
        handles = set()
        for it in range(40):
            sub = comm.Split(0, N - 1 - rank if it % 2 else rank)
            x = np.full(100 + it, rank + 1.0, np.float32)
            dist.allreduce_grads(x, sub, average=False, algorithm="ring")
            assert (x == N * (N + 1) / 2).all()
            state = sub.Get_attr(dist._RING_KEY)
            handles.add(state.comm.py2f())
            sub.Free()
            assert state.comm == MPI.COMM_NULL, "the ring's duplicate outlived its communicator"
        assert len(handles) == 1, sorted(handles)  # (a leak takes a new handle each time)
        x = np.full(10, rank + 1.0, np.float32)
        dist.allreduce_grads(x, comm, average=False, algorithm="ring")
        assert (x == N * (N + 1) / 2).all()
        print("OK", rank)
    """, timeout=60)
    assert out.count("OK") == 2, out
