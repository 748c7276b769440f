"""Precedence tables for the attribute dialects agent frameworks emit (SEMCONV.md section 7).

Data only: `normalise.py` walks these tuples in order and takes the first non-empty value.
"""

from __future__ import annotations

# --- classification -------------------------------------------------------------------------

LANGFUSE_TYPE = {
    "agent": "agent",
    "generation": "llm",
    "embedding": "llm",
    "tool": "tool",
    "chain": "other",
    "retriever": "other",
    "guardrail": "other",
    "evaluator": "other",
    "event": "other",
}  # "span" says nothing (Strands sets it on invoke_agent), so it is not here.

OPENINFERENCE_KIND = {
    "AGENT": "agent",
    "LLM": "llm",
    "EMBEDDING": "llm",
    "TOOL": "tool",
    "RETRIEVER": "other",
    "RERANKER": "other",
    "GUARDRAIL": "other",
    "EVALUATOR": "other",
    "PROMPT": "other",
}  # CHAIN is a run only when parentless; handled in code.

OPERATION = {
    "invoke_agent": "agent",
    "invoke_workflow": "agent",
    "create_agent": "agent",
    "invoke_swarm": "agent",
    "invoke_graph": "agent",
    "chat": "llm",
    "text_completion": "llm",
    "generate_content": "llm",
    "completion": "llm",
    "generate": "llm",
    "embeddings": "llm",
    "llm_request": "llm",
    "execute_tool": "tool",
    "agent_step": "other",
    "execute_task": "other",
    "retrieval": "other",
}

TRACELOOP_KIND = {"workflow": "agent", "agent": "agent", "tool": "tool"}
LLM_REQUEST_TYPE = {"chat": "llm", "completion": "llm", "embedding": "llm"}

VERCEL_RUN_OPS = frozenset(
    {"ai.generateText", "ai.streamText", "ai.generateObject", "ai.streamObject"}
)
VERCEL_LLM_SUFFIXES = (".doGenerate", ".doStream", ".doEmbed")
# Outer embedding spans; their doEmbed child is the call.
VERCEL_OTHER_OPS = frozenset({"ai.embed", "ai.embedMany"})

NAME_PREFIX_TYPE: tuple[tuple[str, str], ...] = (
    ("invoke_agent", "agent"),
    ("agent run", "agent"),
    ("agent_run", "agent"),
    ("invocation", "agent"),
    ("Agent run:", "agent"),
    ("OpenAI Agents trace:", "agent"),
    ("call_llm", "llm"),
    ("Chat completion with", "llm"),
    ("Chat Completion with", "llm"),
    ("Responses API with", "llm"),
    ("execute_tool", "tool"),
    ("running tool", "tool"),
    ("Function:", "tool"),
)
NAME_PREFIXES = tuple(p for p, _ in NAME_PREFIX_TYPE)

# Operations whose usage repeats their children's (step sums); never summed on top of LLM spans.
AGGREGATE_OPERATIONS = frozenset({"agent_step"})

# --- names and ids --------------------------------------------------------------------------

AGENT_NAME = (
    "gen_ai.agent.name",
    "agent.name",
    "gen_ai.workflow.name",
    "traceloop.workflow.name",
)
AGENT_NAME_LATE = ("langfuse.trace.name", "ai.telemetry.functionId", "agent_name", "graph.node.id")
AGENT_NAME_STRIP_PREFIXES = (
    "invoke_agent ",
    "invoke_workflow ",
    "Agent run: ",
    "OpenAI Agents trace: ",
    "agent_run ",
)
AGENT_NAME_STRIP_SUFFIXES = (".kickoff", ".agent", ".workflow")
GENERIC_RUN_NAMES = frozenset({"invoke_agent", "invocation", "agent run"})

RUN_ID = ("gen_ai.agent.call.id", "agent_trace_id", "gcp.vertex.agent.invocation_id")

SESSION_ID = (
    "session.id",
    "langfuse.session.id",
    "gen_ai.conversation.id",
    "ai.telemetry.metadata.sessionId",
    "traceloop.association.properties.session_id",
    "gcp.vertex.agent.session_id",
    "langfuse.trace.metadata.langfuse_session_id",
)
SESSION_METADATA_KEYS = ("langfuse_session_id", "session_id", "thread_id", "conversation_id")
SESSION_ID_LATE = ("group_id",)

USER_ID = (
    "user.id",
    "langfuse.user.id",
    "ai.telemetry.metadata.userId",
    "traceloop.association.properties.user_id",
    "langfuse.trace.metadata.langfuse_user_id",
)
USER_METADATA_KEYS = ("langfuse_user_id", "user_id")
USER_ID_LATE = ("enduser.id",)

# --- models and providers -------------------------------------------------------------------

REQUEST_MODEL = ("gen_ai.request.model", "llm.request.model_name", "ai.model.id")
RESPONSE_MODEL = ("gen_ai.response.model", "llm.response.model_name", "ai.response.model")
MODEL = (
    "langfuse.observation.model.name",
    "gen_ai.response.model",
    "llm.response.model_name",
    "ai.response.model",
    "gen_ai.request.model",
    "llm.model_name",
    "llm.request.model_name",
    "ai.model.id",
    "embedding.model_name",
    "model",
    "model_name",
)

PROVIDER = ("gen_ai.provider.name", "llm.provider", "gen_ai.system", "llm.system")
FRAMEWORK_PROVIDERS = frozenset(
    {"gcp.vertex.agent", "strands-agents", "crewai", "langchain", "pydantic-ai", "openai-agents"}
)
# Legacy and dialect spellings → OTel `gen_ai.provider.name` well-known values.
PROVIDER_ALIASES = {
    "az.ai.openai": "azure.ai.openai",
    "az.ai.inference": "azure.ai.inference",
    "azure": "azure.ai.openai",
    "azure_openai": "azure.ai.openai",
    "azure-openai": "azure.ai.openai",
    "vertex_ai": "gcp.vertex_ai",
    "vertexai": "gcp.vertex_ai",
    "google.vertex": "gcp.vertex_ai",
    "gemini": "gcp.gemini",
    "google.generative-ai": "gcp.gemini",
    "google": "gcp.gen_ai",
    "xai": "x_ai",
    "mistral": "mistral_ai",
    "mistralai": "mistral_ai",
    "aws": "aws.bedrock",
    "bedrock": "aws.bedrock",
    "amazon": "aws.bedrock",
    "amazon-bedrock": "aws.bedrock",
    "together": "together_ai",
}
SERVER_HOST_SUFFIXES: tuple[tuple[str, str], ...] = (
    ("api.openai.com", "openai"),
    (".openai.azure.com", "azure.ai.openai"),
    ("api.anthropic.com", "anthropic"),
    ("generativelanguage.googleapis.com", "gcp.gemini"),
    ("aiplatform.googleapis.com", "gcp.vertex_ai"),
    (".amazonaws.com", "aws.bedrock"),
    ("api.mistral.ai", "mistral_ai"),
    ("api.x.ai", "x_ai"),
    ("api.deepseek.com", "deepseek"),
    ("api.cohere.com", "cohere"),
    ("api.cohere.ai", "cohere"),
    ("api.groq.com", "groq"),
    ("openrouter.ai", "openrouter"),
    ("api.together.xyz", "together_ai"),
)
# OpenRouter-style `vendor/model` names: the part before the slash.
MODEL_VENDOR_PREFIX = {
    "openai": "openai",
    "anthropic": "anthropic",
    "google": "gcp.gemini",
    "mistralai": "mistral_ai",
    "x-ai": "x_ai",
    "deepseek": "deepseek",
    "cohere": "cohere",
    "meta-llama": "meta",
    "amazon": "aws.bedrock",
}
# Checked in order against the lower-cased model name; bedrock-style ids before bare names.
MODEL_PREFIX_PROVIDER: tuple[tuple[str, str], ...] = (
    ("anthropic.", "aws.bedrock"),
    ("amazon.", "aws.bedrock"),
    ("meta.", "aws.bedrock"),
    ("us.", "aws.bedrock"),
    ("eu.", "aws.bedrock"),
    ("apac.", "aws.bedrock"),
    ("global.", "aws.bedrock"),
    ("gpt-", "openai"),
    ("chatgpt", "openai"),
    ("o1", "openai"),
    ("o3", "openai"),
    ("o4", "openai"),
    ("text-embedding", "openai"),
    ("codex", "openai"),
    ("claude", "anthropic"),
    ("gemini", "gcp.gemini"),
    ("mistral", "mistral_ai"),
    ("codestral", "mistral_ai"),
    ("ministral", "mistral_ai"),
    ("pixtral", "mistral_ai"),
    ("magistral", "mistral_ai"),
    ("devstral", "mistral_ai"),
    ("open-mistral", "mistral_ai"),
    ("open-mixtral", "mistral_ai"),
    ("grok", "x_ai"),
    ("deepseek", "deepseek"),
    ("command", "cohere"),
    ("nova-", "aws.bedrock"),
    ("titan-", "aws.bedrock"),
    ("llama", "meta"),
)

# --- usage ----------------------------------------------------------------------------------

INPUT_TOKENS = (
    "gen_ai.usage.input_tokens",
    "gen_ai.usage.prompt_tokens",
    "llm.token_count.prompt",
    "ai.usage.inputTokens",
    "ai.usage.promptTokens",
)
OUTPUT_TOKENS = (
    "gen_ai.usage.output_tokens",
    "gen_ai.usage.completion_tokens",
    "llm.token_count.completion",
    "ai.usage.outputTokens",
    "ai.usage.completionTokens",
)
CACHE_READ_TOKENS = (
    "gen_ai.usage.cache_read.input_tokens",
    "llm.token_count.prompt_details.cache_read",
    "gen_ai.usage.cache_read_input_tokens",
    "ai.usage.inputTokenDetails.cacheReadTokens",
    "ai.usage.cachedInputTokens",
    "gen_ai.usage.details.cache_read_tokens",
)
CACHE_WRITE_TOKENS = (
    "gen_ai.usage.cache_creation.input_tokens",
    "llm.token_count.prompt_details.cache_write",
    "gen_ai.usage.cache_creation_input_tokens",
    "gen_ai.usage.cache_write_input_tokens",
    "ai.usage.inputTokenDetails.cacheWriteTokens",
    "gen_ai.usage.details.cache_write_tokens",
)
REASONING_TOKENS = (
    "gen_ai.usage.reasoning.output_tokens",
    "llm.token_count.completion_details.reasoning",
    "gen_ai.usage.reasoning_tokens",
    "llm.usage.reasoning_tokens",
    "ai.usage.outputTokenDetails.reasoningTokens",
    "ai.usage.reasoningTokens",
    "gen_ai.usage.details.reasoning_tokens",
)
TOTAL_TOKENS = ("gen_ai.usage.total_tokens", "llm.usage.total_tokens", "llm.token_count.total")
# pydantic-ai v2 run spans: cumulative usage under its own prefix (run-level only).
AGGREGATED_INPUT = ("gen_ai.aggregated_usage.input_tokens",)
AGGREGATED_OUTPUT = ("gen_ai.aggregated_usage.output_tokens",)
AGGREGATED_CACHE_READ = ("gen_ai.aggregated_usage.cache_read.input_tokens",)
AGGREGATED_CACHE_WRITE = ("gen_ai.aggregated_usage.cache_creation.input_tokens",)
AGGREGATED_REASONING = (
    "gen_ai.aggregated_usage.reasoning.output_tokens",
    "gen_ai.aggregated_usage.details.reasoning_tokens",  # pydantic-ai 2.x with an OpenAI model
)

# Langfuse usage_details keys: `input` excludes cache, `output` excludes reasoning.
LANGFUSE_CACHE_READ = ("input_cached_tokens", "cache_read_input_tokens", "input_cache_read")
LANGFUSE_CACHE_WRITE = (
    "input_cache_creation",
    "cache_creation_input_tokens",
    "input_cache_creation_5m",
    "input_cache_creation_1h",
)
LANGFUSE_REASONING = ("output_reasoning_tokens",)

COST = ("llm.cost.total", "gen_ai.usage.cost", "operation.cost", "usage.cost")

# --- tools ----------------------------------------------------------------------------------

TOOL_NAME = ("gen_ai.tool.name", "tool.name", "ai.toolCall.name")
TOOL_NAME_STRIP_PREFIXES = ("execute_tool ", "running tool: ", "Function: ")
TOOL_NAME_STRIP_SUFFIXES = (".run", ".tool")
TOOL_CALL_ID = ("gen_ai.tool.call.id", "tool.id", "ai.toolCall.id", "tool_call.id")
TOOL_ARGS = (
    "gen_ai.tool.call.arguments",
    "tool_arguments",
    "ai.toolCall.args",
    "gcp.vertex.agent.tool_call_args",
    "input.value",
    "traceloop.entity.input",
    "input",
    "langfuse.observation.input",
)  # never `tool.parameters`: that is the tool's schema, not the call's arguments
TOOL_RESULT = (
    "gen_ai.tool.call.result",
    "tool_response",
    "ai.toolCall.result",
    "gcp.vertex.agent.tool_response",
    "output.value",
    "traceloop.entity.output",
    "output",
    "langfuse.observation.output",
)
TOOL_FAILED_STATUS = frozenset({"error", "failure"})

# --- content --------------------------------------------------------------------------------

INPUT_TEXT_EARLY = ("langfuse.observation.input",)
INPUT_TEXT_VERCEL = ("ai.prompt.messages", "ai.prompt", "gen_ai.prompt")
INPUT_TEXT_LATE = (
    "traceloop.entity.input",
    "pydantic_ai.all_messages",
    "gcp.vertex.agent.llm_request",
)
OUTPUT_TEXT_EARLY = ("langfuse.observation.output", "gen_ai.output.messages", "output.value")
OUTPUT_TEXT_VERCEL = (
    "ai.response.text",
    "ai.response.object",
    "ai.response.toolCalls",
    "ai.result.text",
    "ai.result.object",
    "ai.result.toolCalls",
    "gen_ai.completion",
)
OUTPUT_TEXT_LATE = (
    "traceloop.entity.output",
    "final_result",
    "gcp.vertex.agent.llm_response",
)
INPUT_EVENTS = frozenset(
    {
        "gen_ai.system.message",
        "gen_ai.user.message",
        "gen_ai.assistant.message",
        "gen_ai.tool.message",
        "gen_ai.content.prompt",
    }
)
OUTPUT_EVENTS = frozenset({"gen_ai.choice", "gen_ai.content.completion"})
DETAILS_EVENT = "gen_ai.client.inference.operation.details"
EVENT_CONTENT_KEYS = ("content", "message", "gen_ai.prompt", "gen_ai.completion", "body")

FLAT_MESSAGE_PREFIXES = (
    "llm.input_messages",
    "llm.output_messages",
    "gen_ai.prompt",
    "gen_ai.completion",
)
# Keys that tell a flattened message list (`prefix.0.…`) is present, probed before walking it.
FLAT_PROBES = {
    prefix: tuple(
        f"{prefix}.0.{tail}"
        for tail in (
            "role",
            "content",
            "message.role",
            "message.content",
            "message.contents.0.message_content.type",
            "message.tool_calls.0.tool_call.function.name",
        )
    )
    for prefix in FLAT_MESSAGE_PREFIXES
}
