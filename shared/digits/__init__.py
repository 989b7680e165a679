"""Toy digits: a coloured, captioned 32x32 dataset from sklearn's digits, and the CNN that scores toy samples."""
