"""Preset folders (read, validate, save) and the registry of named presets."""
