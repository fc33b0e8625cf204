"""Generated from protos/dispatcher/v1 by protos/generate.py. Do not edit."""
