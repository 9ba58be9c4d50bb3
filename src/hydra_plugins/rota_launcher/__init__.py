"""rota as a Hydra launcher: ``python train.py -m hydra/launcher=rota hydra.launcher.gpus=1 ...``.

A Hydra plugin in the ``hydra_plugins`` namespace package (Hydra finds it by scanning that
namespace; this folder ships in the rota distribution). :mod:`.config` registers the launcher's
config (``hydra/launcher=rota``), :mod:`.rota_launcher` is the launcher, :mod:`._job` runs one job
inside a rota task. Needs ``pip install 'rota[hydra]'``. Docs: docs/ecosystem.md.
"""
