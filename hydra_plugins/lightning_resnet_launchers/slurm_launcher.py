"""`launcher=slurm`: the launcher of `lightning_resnet.sweeps.slurm`, defined here because Hydra only takes
launchers defined in a `hydra_plugins` module.

Without the `sweeps` extra (hydra-submitit-launcher) there is nothing to define: `launcher=slurm` then stops
at once naming the extra (`lightning_resnet.sweeps.plugins`), and Hydra's plugin scan stays quiet.
"""

try:
    from lightning_resnet.sweeps import slurm
except ImportError:
    slurm = None

if slurm is not None:

    class SlurmLauncher(slurm.SlurmLauncher):
        """hydra-submitit-launcher's SLURM launcher; a job that SLURM ends without a result is a failed job."""
