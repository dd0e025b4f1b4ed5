"""Validation: ConstraintTemplates (Rego and CEL), constraints and enforcement actions."""
