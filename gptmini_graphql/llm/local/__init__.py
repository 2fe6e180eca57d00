"""The embedded model: llama.cpp in a process of its own.

engine.py      the model on one worker thread, with a bounded queue
server.py      an OpenAI-compatible HTTP server around the engine (`llm serve`)
process.py     the supervisor that runs that server as our child, restarting it
connection.py  how the API reaches the server, and what its errors mean
model_file.py  fetching and verifying the default GGUF file
smoke.py       the install-time check that llama.cpp generates on this CPU
"""
