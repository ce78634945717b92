"""skyscore."""
