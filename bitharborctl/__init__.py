"""BitHarbor client: validate, plan, apply, status."""
