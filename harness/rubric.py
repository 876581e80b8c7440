"""The rubric dimensions people and the LLM judge score answers on (1-5 each): defined once, for harness.judge
and harness.ratings alike."""

DIMENSIONS = ("correctness", "relevance", "helpfulness")
