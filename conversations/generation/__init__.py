"""Replies being generated: tasks of the server process, not of any socket (DESIGN rules 1-6).

A feed makes the upstream request(s) and hands the text to one `Reply` per message; the reply
publishes deltas, answers snapshots and saves itself; the loop's pacer sets the coalescing
window and writes checkpoints. Modules, each importing only those listed before it:

- pacer.py: the adaptive coalescing window and batched checkpoints, per event loop;
- parts.py: reasoning, tool calls and log-probabilities, assembled from deltas, shown and saved;
- prompt.py: the provider, model and prompt (the branch trimmed to the context window);
- titles.py: the conversation's title, asked of the model after its first exchange;
- control.py: a feed's listener for stop and sync commands from any tab or process;
- reply.py: one reply's stream (Markdown or plain text), snapshot and final save;
- running.py: the feeds running in this process (stop them all, for tests);
- feeds.py: chat replies, 1..n from one request or n requests (`open_chat`);
- completion.py: a /v1/completions run, one plain reply per choice (`open_completion`).
"""
