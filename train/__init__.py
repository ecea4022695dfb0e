"""The experiments of the keras-wc papers: `python -m train`.

Modules: `cli` (the command line), `config` (the resolved `Config` and its
checks), `paths` (the file-system checks of the path flags), `presets`
(every row of the WC paper's Tables II–VII and the WN recipe), `run` (the
seed loop), `devices` (devices, distribution strategy, which process
writes), `assembly` (a seed's data, model and optimizer), `callbacks` (the
runner's Keras callbacks), `resume` (bookkeeping of an interrupted seed),
`results` (results.json and config.json), `multiworker` (a Keras workaround
under `MultiWorkerMirroredStrategy`), `schedules` (learning-rate schedules),
`report` (`python -m train.report`, the Markdown table), `data` (the
datasets).
"""
