"""The lab's side of round admission (protocol/round_admission.py): one query per site before each training
round, answered by the sites' mods; sites that do not answer in time are not asked to train."""

from __future__ import annotations

import importlib

from flwr.common import ConfigRecord, Message, MessageType, RecordDict

from protocol import mask_prg, round_admission
from protocol.round_admission import Answer


def lab_mask_generator(secagg_enabled: bool) -> str:
    """The mask generator the lab's SecAgg+ workflow will unmask with (what server/secure_aggregation.py installed)."""
    if not secagg_enabled:
        return round_admission.NO_SECAGG
    return mask_prg.installed_name(importlib.import_module("flwr.server.workflow.secure_aggregation.secaggplus_workflow"))


def ask_admission(grid, nodes: list[int], round_config: dict, mask_generator: str,
                  timeout_s: float = 120.0) -> tuple[dict[int, Answer], dict[int, str], list[int]]:
    """-> (each answering node's answer, each node's error reply (for example a site that refused to run this
    app: client/app_gate.py), the nodes that did not answer)."""
    query = {k: v for k, v in round_config.items() if k != "public_bank"} | {round_admission.MASK_PRG: mask_generator}
    messages = [Message(RecordDict({round_admission.RECORD: ConfigRecord(dict(query))}), dst_node_id=node,
                        message_type=MessageType.QUERY) for node in nodes]
    answers: dict[int, Answer] = {}
    errors: dict[int, str] = {}
    for reply in grid.send_and_receive(messages, timeout=timeout_s) if messages else []:
        if reply.has_error():
            errors[reply.metadata.src_node_id] = str(reply.error.reason)
            continue
        if round_admission.RECORD not in reply.content.config_records:
            continue
        try:
            answers[reply.metadata.src_node_id] = Answer.from_record(reply.content.config_records[round_admission.RECORD])
        except (KeyError, ValueError):
            continue  # a malformed answer counts as none
    return answers, errors, [node for node in nodes if node not in answers and node not in errors]
