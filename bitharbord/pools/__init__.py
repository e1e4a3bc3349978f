"""Storage: block-device facts gathered through the runner, pool assessment (pure), health, the devices list."""
