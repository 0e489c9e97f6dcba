"""Images: the layer ladder, planning and building it, tags, the build record, the base layers on the machine."""
