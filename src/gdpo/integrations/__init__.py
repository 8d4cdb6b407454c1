"""Adapters to the RL trainers people already use: TRL and verl.

Nothing here is imported by ``import gdpo``; import the adapter you need:

* :mod:`gdpo.integrations.trl` (imports ``trl``; checks its version on import):
  our rewards as TRL ``reward_funcs``, :class:`~gdpo.integrations.trl.GDPOTrainer` (TRL's
  ``GRPOTrainer`` with any of our advantage estimators, conditioned rewards and collapse
  diagnostics), and ``TrainConfig`` <-> ``GRPOConfig`` conversion.
* :mod:`gdpo.integrations.verl` (importable without verl): our estimators in verl's
  advantage-estimator registry and a ``compute_score`` that returns per-reward components.

See ``docs/integrations.md``.
"""

__all__: list[str] = []
