pytest_plugins = ["foundry.testing.pytest_postgres", "foundry.testing.pytest_kube"]
