#!/usr/bin/env bash
# Follow-ups of docs/pretraining.md, after experiment.sh: RTD at ELECTRA-small's learning rate
# (5e-4: at 1e-3 the discriminator collapsed), and two more fine-tuning seeds per model (each
# seed is also a different stratified split of BBC News).
set -euo pipefail
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
OUT=reports/pretrain
T=".venv/bin/tunelab"
[ -d $OUT/rtd-small-lr5e-4 ] || $T pretrain --objective rtd --preset small --max-steps 1300 \
  --corpus news-articles --text-column title,text --vocab-size 8000 --seq-len 128 \
  --batch-size 32 --lr 5e-4 --train.warmup_ratio 0.1 --train.eval_every 100 \
  --corpus.max_validation_blocks 128 --train.threads 2 --output $OUT --name rtd-small-lr5e-4
for seed in 0 1 2; do
  FT=(--data bbc-news --data.max_length 128 --epochs 4 --lr 3e-4 --train.batch_size 32
      --train.threads 2 --train.seed $seed --output $OUT/finetune-lr3e-4)
  for m in rtd-small-lr5e-4 mlm-small random-bert-small random-electra-small; do
    name=bbc-$m$([ $seed = 0 ] || echo -seed$seed)
    [ -d $OUT/finetune-lr3e-4/$name ] || $T finetune --model $OUT/$m "${FT[@]}" --name $name
  done
done
# MLM with 30% of tokens chosen (twice the prediction signal per step), same budget
[ -d $OUT/mlm30-small ] || $T pretrain --objective mlm --preset small --max-steps 1300 \
  --corpus news-articles --text-column title,text --vocab-size 8000 --seq-len 128 \
  --batch-size 32 --lr 1e-3 --train.warmup_ratio 0.1 --train.eval_every 100 \
  --corpus.max_validation_blocks 128 --train.threads 2 --pretrain.mlm_probability 0.3 \
  --output $OUT --name mlm30-small
for seed in 0 1 2; do
  name=bbc-mlm30-small$([ $seed = 0 ] || echo -seed$seed)
  [ -d $OUT/finetune-lr3e-4/$name ] || $T finetune --model $OUT/mlm30-small --data bbc-news \
    --data.max_length 128 --epochs 4 --lr 3e-4 --train.batch_size 32 --train.threads 2 \
    --train.seed $seed --output $OUT/finetune-lr3e-4 --name $name
done
# RTD probe at `tiny`, validated every 20 steps: when does the discriminator beat the base rate?
[ -d $OUT/rtd-tiny-probe ] || $T pretrain --objective rtd --preset tiny --max-steps 500 \
  --corpus news-articles --text-column title,text --vocab-size 8000 --seq-len 128 \
  --batch-size 32 --lr 3e-4 --train.warmup_ratio 0.1 --train.eval_every 20 \
  --corpus.max_validation_blocks 128 --train.threads 2 --output $OUT --name rtd-tiny-probe
