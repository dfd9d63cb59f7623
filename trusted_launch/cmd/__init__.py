"""Console entry points; each is a thin shell over a party's package."""
