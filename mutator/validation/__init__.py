"""Validation: Gatekeeper ConstraintTemplates and Constraints (Rego and CEL engines)."""
