# %% [markdown]
# # Vesuvius surface detection with vesukit
# Internet is off here. The first cell installs vesukit and what it needs (segmentation-models-
# pytorch, cc3d, imagecodecs, zarr, ...) from the attached wheels dataset; the second predicts
# every test volume and writes a validated `/kaggle/working/submission.zip`.
# Generated from `kernel/kernel.py` in the vesukit repository by `make kernel`: edit that file.

# %%
import glob
import importlib.util
import sys

found = sorted(glob.glob("/kaggle/input/**/vesukit_bootstrap.py", recursive=True))
if not found:
    raise RuntimeError("No vesukit_bootstrap.py under /kaggle/input: attach the vesukit "
                       "wheels dataset (made by `make wheels`) as an input of this notebook.")
spec = importlib.util.spec_from_file_location("vesukit_bootstrap", found[0])
bootstrap = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = bootstrap
spec.loader.exec_module(bootstrap)
bootstrap.run()

# %%
from vesukit.kaggle import submit

submit("/kaggle/working/submission.zip")
