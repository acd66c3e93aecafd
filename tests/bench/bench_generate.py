"""Generation throughput: batched prediction vs one-by-one ``generate``, same model, same run.

The bundled SmolLM2 answers N chat prompts greedily (max_new_tokens M) twice: one prompt at a
time (batch 1), then batched as ``tuneloop predict`` does (left padding, longest first). Both go
through ``models.lm.ChatModel.generate_ids`` with the same precision, so the only difference is
batching. Reports output tokens/s of each, the ratio (goal >= 5x on CPU) and how many outputs
are identical (greedy decoding with padding can differ in the last bits of bf16 arithmetic).

Env knobs: GEN_N (48), GEN_MAX_NEW (32), GEN_BATCH (48), GEN_MODEL (default bundled SmolLM2).
"""

from __future__ import annotations

import os
import sys
import time


def main() -> int:
    from models.lm import load_chat_model

    n = int(os.environ.get("GEN_N", 48))
    max_new = int(os.environ.get("GEN_MAX_NEW", 32))
    batch = int(os.environ.get("GEN_BATCH", 48))
    cm = load_chat_model(os.environ.get("GEN_MODEL") or None)
    topics = ["my card has not arrived", "how do I top up by bank transfer", "why was I charged a fee",
              "can I change my PIN", "my transfer is pending", "I lost my phone", "what currencies do you support",
              "cancel a payment", "verify my identity", "the ATM kept my card", "refund not showing", "exchange rate"]
    convs = [[{"role": "user", "content": f"Customer says: {topics[i % len(topics)]}" + " please help" * (i % 5)
               + ". Write a short helpful reply."}] for i in range(n)]
    ids = [cm.prompt_ids(c) for c in convs]
    cm.generate_ids(ids[:2], max_new_tokens=4, batch_size=2)  # warm-up
    print(f"{cm}; {n} prompts ({min(map(len, ids))}-{max(map(len, ids))} tokens), max_new_tokens {max_new}", flush=True)
    t = time.perf_counter()
    one = cm.generate_ids(ids, max_new_tokens=max_new, batch_size=1)
    t_one = time.perf_counter() - t
    t = time.perf_counter()
    bat = cm.generate_ids(ids, max_new_tokens=max_new, batch_size=batch)
    t_bat = time.perf_counter() - t
    tok_one, tok_bat = sum(g.n_output_tokens for g in one), sum(g.n_output_tokens for g in bat)
    r_one, r_bat = tok_one / t_one, tok_bat / t_bat
    same = sum(a.text == b.text for a, b in zip(one, bat))
    print("\n| mode | output tokens | wall s | output tokens/s |\n|---|---|---|---|")
    print(f"| one-by-one generate (batch 1) | {tok_one} | {t_one:.1f} | {r_one:.1f} |")
    print(f"| batched predict (batch {batch}, left pad, length-sorted) | {tok_bat} | {t_bat:.1f} | {r_bat:.1f} |")
    print(f"\nratio {r_bat / r_one:.2f}x (goal >= 5x); identical outputs {same}/{n}; "
          f"torch threads {__import__('torch').get_num_threads()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
