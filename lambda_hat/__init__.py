"""lambda-hat: Parsl workflows for ML experiment sweeps and Local Learning Coefficient estimates."""
