"""The stages of the pipeline: the only code that reads and writes a run directory.

``preprocess``, ``pretrain``, ``embed``, ``finetune``, ``evaluate``, ``predict`` and ``demo`` each
take a run directory (a path or :class:`~sleepfm.RunDir`) and their settings (a config dataclass of
:mod:`sleepfm.config`, a YAML path, or keyword overrides), and record what they did in
``run.json``. The command line's sub-commands and the notebooks call them through the public API
(``sleepfm.preprocess_directory``, ``sleepfm.pretrain``, ...); this package imports nothing itself,
so a stage loads only what it needs.
"""
