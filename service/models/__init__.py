"""The model lifecycle: version folders, serving policies, loaded versions and routing."""
