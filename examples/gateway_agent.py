"""An outside agent: a plain `openai` script that knows nothing of creditgym.

It plays one search-QA task through chat completions: the model may ask `<search>query</search>`
and gets `<information>...</information>` back from the task's documents, until it gives
`<answer>...</answer>` or runs out of turns. The last line it prints is its reward: 1.0 for the gold
answer, else half the fraction of the gold answer's letters found in the final reply (partial credit).

The gateway driver runs it with OPENAI_BASE_URL (its session's URL) and CREDITGYM_TASK set:

    OPENAI_BASE_URL=http://127.0.0.1:8100/s/s1/v1 OPENAI_API_KEY=x \
    CREDITGYM_TASK='{"question": "Capital of France?", "answer": "paris", "docs": {"france": "Paris."}}' \
    python examples/gateway_agent.py
"""

import json
import os
import re

import openai

SYSTEM = ("Answer the question. To look something up write <search>query</search>; "
          "give the final answer as <answer>text</answer>.")  # fmt: skip


def play(client: openai.OpenAI, task: dict, model: str, max_turns: int = 3, max_tokens: int = 32) -> float:
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": task["question"]}]
    reply = ""
    for _ in range(max_turns):
        out = client.chat.completions.create(
            model=model, messages=messages, max_tokens=max_tokens, temperature=1.0
        )
        reply = out.choices[0].message.content or ""
        messages.append({"role": "assistant", "content": reply})
        answer = re.search(r"<answer>(.*?)</answer>", reply, re.S)
        if answer:
            reply = answer.group(1)
            break
        query = re.search(r"<search>(.*?)</search>", reply, re.S)
        if not query:
            break
        words = query.group(1).lower().split()
        found = [text for key, text in task.get("docs", {}).items() if key in words]
        messages.append(
            {"role": "user", "content": f"<information>{' '.join(found) or 'nothing found'}</information>"}
        )
    gold = task["answer"].lower()
    if reply.strip().lower() == gold:
        return 1.0
    letters = set(gold) - {" "}  # partial credit, dense enough that an untrained model's runs differ
    return 0.5 * len(letters & set(reply.lower())) / max(len(letters), 1)


def main() -> None:
    client = openai.OpenAI(max_retries=0)  # reads OPENAI_BASE_URL and OPENAI_API_KEY
    task = json.loads(os.environ["CREDITGYM_TASK"])
    model = os.environ.get("AGENT_MODEL") or client.models.list().data[0].id
    print(play(client, task, model, max_tokens=int(os.environ.get("AGENT_MAX_TOKENS", "32"))))


if __name__ == "__main__":
    main()
