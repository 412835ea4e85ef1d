"""Function calling: a tool registry, tool retrieval, schema-constrained calls, execution.

    from edge.tools import Registry, tool, call

    @tool
    def get_weather(city: str) -> str:
        '''Current weather of a city.'''
        return "sunny"

    reg = Registry([get_weather])            # or Registry.from_openai(tools), Registry.load("tools.json")
    reg.retrieve("is it raining in Oslo?")   # names of the kept tools, best first
    out = call(edge.load(), "is it raining in Oslo?", reg, execute=True)

Heavy libraries (llguidance, onnxruntime, jsonschema) load on first use.
"""
from __future__ import annotations

from .call import CallOptions, CallResult, call
from .execute import ToolCall
from .registry import Registry, Tool, from_function, tool

__all__ = ["Registry", "Tool", "ToolCall", "tool", "from_function", "call", "CallOptions", "CallResult"]
