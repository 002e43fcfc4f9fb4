"""The MLP training cases: one epoch of the digits MLP (64-256-10, ReLU, Adam lr=1e-3, batch 64,
cross-entropy), and of an MNIST-shaped one (784-128-10 on 60,000 synthetic rows, batch 128, Adam or
momentum SGD).

fastdescent (``fd.nn.MLP`` + ``fd.fit`` on each backend) is compared with the same model written in
torch (``nn.Sequential``, the same ``torch.optim`` optimizer, the usual zero_grad/backward/step
loop) and with scikit-learn's ``MLPClassifier`` with the same solver (``partial_fit`` is one epoch).

Checks before timing: a fastdescent backend trains ``case.check_epochs`` epochs (3 on the digits, 1 on
the MNIST-shaped data) from the same seed as the NumPy backend and must end with the same parameters
(rtol 1e-4, atol 1e-5: matmul reduction order differs between backends); a peer, which initialises
and shuffles its own way, must reach :data:`MIN_ACCURACY` test accuracy after as many epochs (it
trains the same problem).
"""

from __future__ import annotations

import functools
import warnings

import numpy as np

from .cases import MLP_BATCH, MLP_OPTIMIZERS, CheckError, Instance, _compare, mlp_data

CHECK_EPOCHS = 3  # the digits case's (MlpCase.check_epochs)
MIN_ACCURACY = 0.85

__all__ = ["build", "check", "fd_model", "CHECK_EPOCHS", "MIN_ACCURACY"]


def fd_model(backend, sizes, seed, optimizer="adam"):
    """A fastdescent MLP and its optimizer (``MLP_OPTIMIZERS[optimizer]``) on ``backend``."""
    import fastdescent as fd
    from fastdescent import nn

    cls, kw, _ = MLP_OPTIMIZERS[optimizer]
    model = nn.MLP(list(sizes), activation="relu", seed=seed, backend=backend)
    opt = getattr(fd, cls)(model.parameters(), **kw, backend=backend)
    return model, opt


def fd_epoch(model, opt, X, y, seed, epochs=1, progress=False, batch_size=MLP_BATCH):
    """``epochs`` epochs of ``fastdescent.nn.fit`` (cross-entropy, shuffled from ``seed``)."""
    from fastdescent import nn

    return nn.fit(model, X, y, loss="cross_entropy", optimizer=opt, epochs=epochs,
                  batch_size=batch_size, seed=seed, progress=progress)


def _accuracy(pred, y):
    return float(np.mean(np.asarray(pred) == y))


def build(case):
    Xtr, ytr, Xte, yte = mlp_data(case.data, case.seed)
    batch = case.batch
    steps = -(-len(Xtr) // batch)
    impl = case.impl
    cls, kw, sk_kw = MLP_OPTIMIZERS[case.optimizer]
    counter = {"epoch": 0}
    if case.kind == "fastdescent":
        model, opt = fd_model(impl, case.sizes, case.seed, case.optimizer)

        def step():
            counter["epoch"] += 1
            fd_epoch(model, opt, Xtr, ytr, case.seed + counter["epoch"], batch_size=batch)

        inst = Instance(step, lambda: [np.array(p) for p in model.params], keep=(model, opt))
        inst.predict = model.predict_classes
    elif impl == "torch":
        import torch

        torch.manual_seed(case.seed)
        layers = []
        for a, b in zip(case.sizes[:-1], case.sizes[1:]):
            layers += [torch.nn.Linear(a, b), torch.nn.ReLU()]
        net = torch.nn.Sequential(*layers[:-1])
        opt = getattr(torch.optim, cls)(net.parameters(), **kw)
        tX, ty = torch.from_numpy(Xtr), torch.from_numpy(ytr)
        gen = torch.Generator().manual_seed(case.seed)
        lossf = torch.nn.CrossEntropyLoss()

        def step():
            perm = torch.randperm(len(tX), generator=gen)
            for i in range(0, len(tX), batch):
                idx = perm[i:i + batch]
                opt.zero_grad(set_to_none=True)
                loss = lossf(net(tX[idx]), ty[idx])
                loss.backward()
                opt.step()

        def predict(X):
            with torch.no_grad():
                return net(torch.from_numpy(np.ascontiguousarray(X, np.float32))).argmax(1).numpy()

        inst = Instance(step, None, keep=(net, opt))
        inst.predict = predict
    elif impl == "sklearn":
        from sklearn.neural_network import MLPClassifier

        clf = MLPClassifier(hidden_layer_sizes=tuple(case.sizes[1:-1]), activation="relu",
                            batch_size=batch, alpha=0.0, random_state=case.seed, **sk_kw)
        classes = np.unique(ytr)

        def step():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                clf.partial_fit(Xtr, ytr, classes=classes)

        inst = Instance(step, None, keep=clf)
        inst.predict = clf.predict
    else:
        raise ValueError(f"unknown implementation {impl!r}")
    inst.steps_per_unit = steps
    inst.accuracy = lambda: _accuracy(inst.predict(Xte), yte)
    inst.note = f"1 epoch = {steps} steps of batch {batch} over {len(Xtr)} {case.data} rows"
    return inst


@functools.lru_cache(maxsize=1)
def _reference_params(case):
    import dataclasses

    ref = dataclasses.replace(case, impl="numpy")
    inst = build(ref)
    for _ in range(ref.check_epochs):
        inst.step()
    out = tuple(inst.result())
    inst.close()
    return out


def check(case, inst):
    import dataclasses

    epochs = case.check_epochs
    for _ in range(epochs):
        inst.step()
    acc = inst.accuracy()
    out = {"test_accuracy": acc, "epochs": epochs}
    if case.kind == "fastdescent":
        reason = dataclasses.replace(case, impl="numpy").unavailable()
        if reason is None:
            ref = _reference_params(dataclasses.replace(case, impl="numpy"))
            out["max_abs_err"] = _compare(case.id, inst.result(), ref, 1e-4, 1e-5)
            out.update(rtol=1e-4, atol=1e-5)
        else:  # only the accuracy check below is possible
            out["reference"] = f"NumPy reference unavailable: {reason}"
    if acc < MIN_ACCURACY:
        raise CheckError(f"{case.id}: test accuracy {acc:.3f} after {epochs} epochs is below "
                         f"{MIN_ACCURACY} (the model does not learn)")
    return out
