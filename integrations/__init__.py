"""Engine adapters: creditgym envs and credit inside the trainers people already run (docs/scale.md).

A top layer (ARCHITECTURE.md "Layers"): it may import all of creditgym and nothing imports it. Each
engine is imported only by its own module, so `import creditgym.integrations` needs no engine:

    from creditgym.integrations.trl import CreditGRPOTrainer, task_dataset   # pip install 'creditgym[trl]'
"""
