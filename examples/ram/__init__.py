"""The RAM pipeline ("Restore Anything with Masks", ECCV 2024) on macattr, as a package run from the repository's
root: ``python -m examples.ram all --preset tiny --out runs/tiny``.

- [`presets`][examples.ram.presets]: frozen records of every setting, one per preset;
- [`records`][examples.ram.records]: the one rule for reusing and resuming files;
- [`pipeline`][examples.ram.pipeline]: pre-training, analysis, fine-tuning, evaluation;
- [`studies`][examples.ram.studies]: the layer ablation, the mask-ratio ablation, the ranking's robustness;
- [`summary`][examples.ram.summary]: their statistics; [`report`][examples.ram.report]: results files and figures;
- [`cli`][examples.ram.cli]: the command; [`blur_headroom`][examples.ram.blur_headroom]: how far blur can go.
"""
