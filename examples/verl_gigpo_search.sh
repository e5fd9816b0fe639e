#!/usr/bin/env bash
# GiGPO's per-turn credit inside verl's PPO trainer (Ray), on creditgym's SearchEasy (docs/scale.md, "verl").
#
# NOT RUN HERE: verl's trainer needs GPUs (vLLM rollout, FSDP actor); this repository's CI has none, and
# the adapter is tested on CPU against verl's own classes instead (tests/integrations/verl, make test-verl).
#
#   pip install 'verl[vllm]==0.9.1' && pip install -e .  # verl's pins: transformers<5.11, tensordict<=0.10
#   bash examples/verl_gigpo_search.sh                   # one node, 8 GPUs (examples/verl_gigpo_search.yaml)
#   bash examples/verl_gigpo_search.sh trainer.n_gpus_per_node=4 actor_rollout_ref.rollout.n=4   # any override
#   MODEL=/path/to/model DATA_DIR=/data/search bash examples/verl_gigpo_search.sh
#
# Each parquet row is one SearchEasy task (its task id and seed); verl plays it rollout.n times through the
# creditgym_agent loop (the env's exact tokens, env replies masked out of the loss) and computes gigpo's
# advantages on the whole batch, with the env's state keys, via the worker_process_setup_hook in the config.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA_DIR="${DATA_DIR:-data/verl_search}"
export DATA_DIR
mkdir -p "$DATA_DIR"
python - <<PY
from creditgym.integrations.verl import write_task_parquet
write_task_parquet("$DATA_DIR/train.parquet", "creditgym/SearchEasy-v0", range(1024))
write_task_parquet("$DATA_DIR/val.parquet", "creditgym/SearchEasy-v0", range(10**6, 10**6 + 256))
PY
python -m verl.trainer.main_ppo --config-path="$PWD/examples" --config-name=verl_gigpo_search "$@"
