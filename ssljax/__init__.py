"""ssljax: self-supervised pretraining (Barlow Twins, SimCLR) and its evaluation on MedMNIST."""

__version__ = "0.1.0"
