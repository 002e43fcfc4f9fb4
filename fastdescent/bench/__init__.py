"""Benchmarks of fastdescent's hot paths: the ``fastdescent bench`` / ``demo`` commands and the
case definitions shared with ``benchmarks/`` (pytest-benchmark).

Modules: :mod:`~fastdescent.bench.cases` (what is measured, and the correctness check),
:mod:`~fastdescent.bench.timing` (how), :mod:`~fastdescent.bench.roofline` (the streaming probe),
:mod:`~fastdescent.bench.runner` (groups, interleaving, derived figures),
:mod:`~fastdescent.bench.report` (tables, JSON, Markdown, plot, the performance targets),
:mod:`~fastdescent.bench.mlp` (the digits MLP case), :mod:`~fastdescent.bench.commands`,
:mod:`~fastdescent.bench.demo`, :mod:`~fastdescent.bench.infocmd` (the CLI commands).
Nothing here is imported by ``import fastdescent``.
"""
