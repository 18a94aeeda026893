"""xray: pneumonia-detection workbench core."""
