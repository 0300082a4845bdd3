pytest_plugins = [
    "foundry.testing.pytest_postgres",
    "foundry.testing.pytest_kube",
    "foundry.testing.pytest_crds",
]
