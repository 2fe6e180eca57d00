"""The four text tasks: each turns validated arguments into messages for the
model and the model's answer into a typed result."""
