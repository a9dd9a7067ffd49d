"""Every knob of ssljax, declared once.

Method and experiment configs start from `get_config()` and override what they change.
Configs hold primary values only: steps, scaled learning rates and other derived numbers
are computed in code, so a command-line override never leaves a stale value behind.

Keys read by scripts and sweeps (the shared vocabulary): `seed`, `method`, `data.name`,
`data.size`, `data.root`, `data.label_fraction`, `model.name`, `model.width`,
`train.batch_size`, `train.epochs`, `init.workdir`.
"""

import os

import ml_collections
from ml_collections import config_dict

DEFAULT_DATA_ROOT = "~/.medmnist"
DEFAULT_TFDS_DIR = "~/.cache/ssljax/tfds"


def default_data_root() -> str:
    """The data folder: `$SSLJAX_DATA_DIR`, else `~/.medmnist` (the medmnist package's)."""
    return os.environ.get("SSLJAX_DATA_DIR") or DEFAULT_DATA_ROOT


def default_tfds_dir() -> str:
    """Where TFDS datasets are built (writable): `$SSLJAX_TFDS_DIR`, else ~/.cache/ssljax/tfds."""
    return os.environ.get("SSLJAX_TFDS_DIR") or DEFAULT_TFDS_DIR


def view_config(blur_prob: float, solarize_prob: float) -> ml_collections.ConfigDict:
    """Augmentation settings of one view (BYOL / Barlow Twins defaults)."""
    v = ml_collections.ConfigDict()
    v.crop_scale = (0.2, 1.0)  # random resized crop: area fraction range
    v.crop_ratio = (3 / 4, 4 / 3)  # aspect ratio range
    v.hflip_prob = 0.5
    v.vflip_prob = 0.0
    v.jitter_prob = 0.8  # colour jitter (RGB) or brightness/contrast (grey)
    v.brightness = 0.4
    v.contrast = 0.4
    v.saturation = 0.2  # RGB only
    v.hue = 0.1  # RGB only
    v.grayscale_prob = 0.2  # RGB only
    v.gamma = 0.0  # grey: log-uniform gamma in [1/(1+g), 1+g] with prob jitter_prob
    v.noise_std = 0.0  # additive Gaussian noise std on [0, 1] images
    v.blur_prob = blur_prob
    v.blur_sigma = (0.1, 2.0)  # pixels, at every size (BYOL at 224 px, solo-learn at 32 px)
    v.solarize_prob = solarize_prob
    return v


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0
    # barlow_twins | simclr (pretraining); finetune | linear | knn (evaluation).
    config.method = "barlow_twins"

    config.data = ml_collections.ConfigDict()
    config.data.name = "pathmnist"  # a MedMNIST flag, or a name for data.path
    config.data.size = 28  # 28 | 64 | 128 | 224
    config.data.root = default_data_root()
    config.data.download = True
    config.data.path = ""  # a user's own .npz in MedMNIST layout (overrides name/size)
    config.data.task = ""  # task type for data.path; registry datasets know theirs
    config.data.label_fraction = 1.0  # in (0, 1]; evaluation only
    config.data.labels_per_class = 0  # > 0: a fixed count per class instead of a fraction
    # A folder of images in place of data.name (README "Your own images"): converted once
    # into data.root/folders/ at data.size, then loaded like data.path (ssljax/data/folder.py).
    config.data.folder = ""
    config.data.labels = ""  # CSV: image path (1st column), label column(s); "": class folders
    config.data.label_columns = ()  # the CSV's label columns; (): all but the path and `split`
    config.data.resize = "crop"  # crop | pad | stretch, to data.size x data.size
    config.data.channels = 0  # 0: the folder's majority, grey (1) or RGB (3); 1 | 3 force it
    config.data.min_size = 0  # shorter sides below this many pixels are skipped; 0: size // 4
    # Images of more pixels are skipped, from their header, before decoding (every format,
    # DICOM included): 4096 x 4096 by default, at most ~0.5 GB to decode one.
    config.data.max_pixels = 1 << 24
    config.data.split_fractions = (0.7, 0.1, 0.2)  # train/val/test drawn when no split folders
    config.data.split_seed = 0  # the drawn split's own seed: config.seed never moves it
    # Where pretraining reads images (ssljax/data/sources.py): memory (the whole .npz) | tfds
    # (array_record built once in data.tfds_dir, the train split read batch by batch) | auto
    # (memory when the train images fit data.memory_budget_gb, else tfds).
    config.data.source = "auto"
    config.data.memory_budget_gb = 8.0
    config.data.tfds_dir = default_tfds_dir()  # must be writable
    config.data.workers = 0  # grain worker processes reading TFDS records (0: none)
    config.data.threads = 2  # steps read concurrently in the training process
    config.data.prefetch = 4  # steps read ahead of the train loop

    config.model = ml_collections.ConfigDict()
    config.model.name = "resnet18"  # resnet18 | resnet34 | resnet50
    config.model.width = 64  # base channel count; 64 is the standard ResNet
    config.model.stem = "auto"  # small | imagenet | auto (small for <= 64 px)
    config.model.dtype = "float32"  # compute dtype; bfloat16 on GPU/TPU
    config.model.projector_dims = (2048, 2048, 2048)  # hidden..., output
    # False: every residual branch starts on (torchvision's default, used by MedMNIST v2's
    # supervised baselines and solo-learn). True zeroes each block's last BatchNorm scale
    # (the Barlow Twins reference); a frozen random encoder then has every branch switched off.
    config.model.zero_init_residual = False

    config.loss = ml_collections.ConfigDict()
    config.loss.lambd = 0.0051  # Barlow Twins off-diagonal weight
    config.loss.temperature = 0.2  # SimCLR NT-Xent temperature
    # Barlow Twins only: multiplies the loss and so its gradients (solo-learn's scale_loss,
    # 0.1 in its CIFAR recipe); the logged on_diag / off_diag terms stay unscaled.
    config.loss.scale = 1.0

    config.augment = ml_collections.ConfigDict()
    config.augment.enabled = True  # evaluation: light training augmentation when true
    config.augment.view1 = view_config(blur_prob=1.0, solarize_prob=0.0)
    config.augment.view2 = view_config(blur_prob=0.1, solarize_prob=0.2)

    config.train = ml_collections.ConfigDict()
    config.train.batch_size = 256  # global batch, over all devices and hosts
    config.train.epochs = 100
    config.train.optimizer = "lars"  # lars | sgd | adam | adamw
    config.train.base_lr = 0.3  # LARS/SGD: lr = base_lr * batch_size / 256
    config.train.bias_lr_factor = 1.0  # LARS: lr multiplier of biases and BN (paper: 0.024)
    # LARS eta and lr clipping: solo-learn's CIFAR recipes (eta 0.02, clip_lr True), which
    # SimCLR keeps; Barlow Twins learns with 0.003 unclipped (configs/barlow.py says why).
    config.train.trust_coefficient = 0.02
    config.train.clip_lr = True
    # LARS's trust ratio (and clip) on each gradient before momentum (the references) or on
    # the momentum update, where the clip bounds every step taken (optim.lars).
    config.train.trust_on = "gradient"  # gradient | update
    config.train.weight_decay = 1e-4
    config.train.momentum = 0.9
    config.train.schedule = "cosine"  # cosine (after warmup) | step | constant
    # Warmup and step decay follow the run's length: fractions of train.epochs, unless the
    # epochs are set (a user who sets them gets exactly that).
    config.train.warmup_fraction = 0.1
    config.train.warmup_epochs = config_dict.placeholder(float)
    config.train.decay_fractions = (0.5, 0.75)  # step schedule: x0.1 at each (MedMNIST v2)
    config.train.decay_epochs = config_dict.placeholder(tuple)
    config.train.steps_per_dispatch = 1  # train steps fused in one jit call (lax.scan)

    config.checkpoint = ml_collections.ConfigDict()
    config.checkpoint.every_epochs = 10
    config.checkpoint.keep = 2

    config.log = ml_collections.ConfigDict()
    config.log.every_steps = 20
    config.log.monitor_every_epochs = 5  # kNN accuracy on val; 0 disables
    config.log.progress = True

    config.eval = ml_collections.ConfigDict()
    config.eval.batch_size = 256
    config.eval.knn_k = 20
    config.eval.knn_metric = "cosine"  # cosine (temperature-weighted votes) | euclidean
    config.eval.knn_temperature = 0.07
    # Chosen on val; up to 1 since the 2026-12-06 study (issue 21): small labelled subsets
    # (1% of PneumoniaMNIST is 47 images) can need more than 1e-2.
    config.eval.linear_l2 = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)
    config.eval.linear_epochs = 100
    # Train-split images BatchNorm statistics are re-estimated on before any scoring (both
    # arms, every protocol); 0 scores with the running averages as they are.
    config.eval.bn_images = 2048
    # Test images a pretraining's end-of-run PCA figure embeds (a fixed sample, so the time
    # after the last step does not grow with the dataset); 0: the whole test split.
    config.eval.figure_images = 2048

    config.init = ml_collections.ConfigDict()
    config.init.workdir = ""  # pretraining run (or checkpoint path); empty: random init
    # all | batchnorm: keep only the pretrained BatchNorm parameters on random kernels (ablation)
    config.init.transfer = "all"

    config.distributed = ml_collections.ConfigDict()
    config.distributed.initialize = False  # jax.distributed.initialize() (TPU VM, multi-host)
    config.distributed.coordinator_address = ""  # empty: auto-detect (TPU, SLURM, ...)
    config.distributed.num_processes = 0
    config.distributed.process_id = -1
    return config
