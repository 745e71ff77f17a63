"""MLflow only, a module per concern: the store (:mod:`.store`), runs (:mod:`.runs`), seed
runs and what they log (:mod:`.seeds`), the UI's text (:mod:`.ui`), the writer process
(:mod:`.writer`) and the untracked stand-in (:mod:`.null`).

Nothing is imported here: the writer process and ``--no-tracking`` commands start light.
"""
