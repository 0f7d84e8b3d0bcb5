"""Knapsack solvers that turn importance scores and latency tables into a Plan."""
