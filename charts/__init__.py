"""cdk8s charts the cluster stack applies."""
