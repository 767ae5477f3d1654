"""Launchers of lightning-resnet (`launcher=ray`). Like `lightning_resnet_sweepers`, a package inside the
`hydra_plugins` namespace package, where Hydra looks for launchers; it imports Ray only when a sweep uses it."""
