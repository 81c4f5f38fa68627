"""The prompts every measurement uses, the same for the split stack and the unsplit baseline."""

SHORT = [{"role": "user", "content": "What is the capital of France?"}]

# Asks for a long answer, so greedy decoding runs the full token budget without hitting EOS.
DECODE = [{"role": "user", "content": "Write a long, detailed story about a lighthouse keeper who finds a message in a bottle."}]

TOPICS = ["a lighthouse keeper", "a lost robot", "a dragon who hates fire", "a baker in Paris",
          "a time-travelling cat", "an old sailor", "a girl who talks to trees", "a city under the sea",
          "a forgotten library", "a clockmaker's apprentice", "a mountain village in winter", "a space station cook",
          "a detective dog", "a painter who lost her colours", "a river that flows uphill", "the last train home"]

# One distinct prompt per concurrent client: different lengths exercise the batch's bookkeeping.
CONCURRENT = [[{"role": "user", "content": f"Write a short story about {topic}."}] for topic in TOPICS]

SECTION = ("Section {i}: the river delta supports farming, fishing and trade, and its towns grew along the "
           "banks where boats could land goods from upstream markets before the seasonal floods arrived.")


def chat_ids(tokenizer, messages) -> list[int]:
    out = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)
    return list(out["input_ids"])


def long_prompt(tokenizer, target: int = 400) -> list[dict]:
    """A summarisation request whose templated prompt is the first length >= `target` tokens."""
    sections = []
    while True:
        sections.append(SECTION.format(i=len(sections) + 1))
        messages = [{"role": "user", "content": "Summarize this report in two sentences.\n\n" + " ".join(sections)}]
        if len(chat_ids(tokenizer, messages)) >= target:
            return messages
