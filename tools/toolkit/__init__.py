"""What only the tools share: their start (bootstrap), console, config edits, checkpoint and
data checks, the resume policy and the launch environment. It registers nothing: the registry
plug-ins are custom_modules, which this package may import and which never imports it."""
