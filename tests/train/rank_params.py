"""Run under torchrun: train a job with the library's Trainer, then write every rank's parameters
(flattened, fp32) to OUT/params-<rank>.pt so a test can compare the ranks' copies."""

import sys
from pathlib import Path

import torch

from hpcdiff import dist
from hpcdiff.config import load_config
from hpcdiff.train.job import TrainJob
from hpcdiff.train.loop import Trainer

job_path, out, *overrides = sys.argv[1:]
job = load_config(TrainJob, Path(job_path), overrides=overrides)
env = dist.detect()
trainer = Trainer(job, Path(out), env=env, resume="never", progress=False)
trainer.run()
flat = torch.cat([p.detach().float().flatten() for p in trainer.engine.module.parameters()])
torch.save({"params": flat, "ema": trainer.ema.state_dict()}, Path(out) / f"params-{env.rank}.pt")
