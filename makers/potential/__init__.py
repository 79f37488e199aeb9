"""The campaign potential as a product (export, model card)."""
