"""The experiments of the keras-wc papers: `python -m train`.

Modules: `cli` (the command line), `config` (the resolved `Config`),
`presets` (every row of the WC paper's Tables II–VII and the WN recipe),
`run` (the runner: importable functions doing the work), `schedules`
(learning-rate schedules), `report` (`python -m train.report`, the Markdown
table), `data` (the datasets).
"""
