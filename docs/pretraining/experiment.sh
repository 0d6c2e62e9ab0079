#!/usr/bin/env bash
# The transfer-learning experiment of docs/pretraining.md, one run at a time on a quiet
# machine (2 cores). Outputs under reports/pretrain/ (gitignored); the small files are copied
# into docs/pretraining/ by hand. Each step is skipped when its output exists, so the script
# can be re-run after an interruption.
set -euo pipefail
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
OUT=reports/pretrain
T=".venv/bin/tunelab"
STEPS=${STEPS:-1300}
COMMON=(--corpus news-articles --text-column title,text --vocab-size 8000 --seq-len 128
        --batch-size 32 --lr 1e-3 --train.warmup_ratio 0.1 --train.eval_every 100
        --corpus.max_validation_blocks 128 --train.threads 2 --output $OUT)
[ -d $OUT/mlm-small ] || $T pretrain --objective mlm --preset small --max-steps $STEPS "${COMMON[@]}" --name mlm-small
[ -d $OUT/rtd-small ] || $T pretrain --objective rtd --preset small --max-steps $STEPS "${COMMON[@]}" --name rtd-small
[ -d $OUT/random-bert-small ] || .venv/bin/python docs/pretraining/make_random_init.py $OUT/mlm-small $OUT/random-bert-small
[ -d $OUT/random-electra-small ] || .venv/bin/python docs/pretraining/make_random_init.py $OUT/rtd-small $OUT/random-electra-small
# the same fine-tuning recipe for all four: full BBC News split, 128 tokens, 4 epochs
FT=(--data bbc-news --data.max_length 128 --epochs 4 --lr ${FT_LR:-3e-4}
    --train.batch_size 32 --train.threads 2 --output $OUT/finetune-lr${FT_LR:-3e-4})
for m in mlm-small random-bert-small rtd-small random-electra-small; do
  [ -d $OUT/finetune-lr${FT_LR:-3e-4}/bbc-$m ] || $T finetune --model $OUT/$m "${FT[@]}" --name bbc-$m
done
[ -d $OUT/clm-small ] || $T pretrain --objective clm --preset small --corpus news-articles \
  --text-column title,text --vocab-size 8000 --seq-len 128 --batch-size 32 --lr 2e-3 \
  --train.warmup_ratio 0.05 --train.eval_every 100 --corpus.max_validation_blocks 128 \
  --train.threads 2 --max-steps ${CLM_STEPS:-800} --output $OUT --name clm-small
[ -f $OUT/clm-samples.md ] || .venv/bin/python docs/pretraining/sample_clm.py $OUT/clm-small > $OUT/clm-samples.md
