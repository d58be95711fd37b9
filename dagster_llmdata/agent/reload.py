"""Reload a code location of a running Dagster webserver through its GraphQL API, so approved
pipelines appear in the UI without a restart."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

RELOAD = """mutation Reload($name: String!) {
  reloadRepositoryLocation(repositoryLocationName: $name) {
    __typename
    ... on WorkspaceLocationEntry { name locationOrLoadError { __typename ... on PythonError { message } } }
    ... on ReloadNotSupported { message }
    ... on RepositoryLocationNotFound { message }
    ... on UnauthorizedError { message }
    ... on PythonError { message }
  }
}"""


def graphql(url: str, query: str, variables: dict | None = None, timeout: float = 60) -> dict:
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    req = urllib.request.Request(url.rstrip("/") + "/graphql", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read())


def reload_code_location(url: str, location: str) -> dict:
    """{'ok': bool, 'detail': ...}: never raises for an unreachable webserver (the spec is in
    assets/ either way; the next webserver start loads it)."""
    try:
        answer = graphql(url, RELOAD, {"name": location})
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return {"ok": False, "detail": f"no Dagster webserver reachable at {url} ({exc}); the pipeline loads at its next start"}
    if answer.get("errors"):
        return {"ok": False, "detail": str(answer["errors"])[:500]}
    data = answer.get("data", {}).get("reloadRepositoryLocation") or {}
    if data.get("__typename") != "WorkspaceLocationEntry":
        return {"ok": False, "detail": f"{data.get('__typename')}: {data.get('message')}"}
    load = data.get("locationOrLoadError") or {}
    if load.get("__typename") == "PythonError":
        return {"ok": False, "detail": f"location {location!r} failed to load: {load.get('message', '')[:500]}"}
    return {"ok": True, "detail": f"code location {location!r} reloaded"}
