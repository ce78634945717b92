"""What must not happen twice: claims and conditional updates on a blob store's native primitive."""
