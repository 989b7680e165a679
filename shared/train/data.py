"""`DatasetLoader` moved to shared.data (the one home of data loading); this name stays for old imports."""
from shared.data.dataset_loader import DatasetLoader, PermutationBatches

__all__ = ["DatasetLoader", "PermutationBatches"]
