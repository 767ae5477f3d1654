"""What a run reports after testing: per-class figures, the confusion matrix, curves, the feature
embedding and the most confident mistakes, as files and as TensorBoard entries."""
