"""A real PACS for the tests: Debian's Orthanc on free loopback ports, a temporary configuration and storage,
stopped at the end. Its REST API (urllib, loopback only) loads test DICOMs and reads results back."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

AET = "ORTHANC"
START_TIMEOUT_S = 30


def orthanc_binary() -> str | None:
    return shutil.which("Orthanc") or shutil.which("Orthanc", path="/usr/sbin:/usr/local/sbin")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Orthanc:
    process: subprocess.Popen
    http_port: int
    dicom_port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=30) as response:
            body = response.read()
        return json.loads(body) if body[:1] in (b"{", b"[") else body

    def post(self, path: str, data: bytes, content_type: str = "application/dicom") -> Any:
        request = urllib.request.Request(self.url + path, data=data, method="POST",
                                         headers={"Content-Type": content_type})
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read())

    def upload(self, dicom: bytes) -> dict:
        return self.post("/instances", dicom)

    def clear(self) -> None:
        for patient in self.get("/patients"):
            request = urllib.request.Request(f"{self.url}/patients/{patient}", method="DELETE")
            urllib.request.urlopen(request, timeout=30).close()

    def instances_of_study(self, study_uid: str) -> list[bytes]:
        found = self.post("/tools/lookup", study_uid.encode(), "text/plain")
        files = []
        for match in found:
            if match["Type"] == "Study":
                for instance in self.get(f"/studies/{match['ID']}/instances"):
                    files.append(self.get(f"/instances/{instance['ID']}/file"))
        return files

    def stop(self) -> None:
        """Killed: its storage is thrown away with the temporary folder, so a clean shutdown (seconds) buys nothing."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)


def start_orthanc(directory: Path) -> Orthanc:
    """Orthanc with its own configuration and storage under ``directory``, answering on loopback only."""
    binary = orthanc_binary()
    if binary is None:
        raise FileNotFoundError("Orthanc is not installed (CI installs Debian's orthanc)")
    directory.mkdir(parents=True, exist_ok=True)
    http_port, dicom_port = free_port(), free_port()
    while dicom_port == http_port:
        dicom_port = free_port()
    config = {
        "Name": "xray-tests", "StorageDirectory": str(directory / "db"), "IndexDirectory": str(directory / "db"),
        "HttpPort": http_port, "DicomPort": dicom_port, "DicomAet": AET, "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False, "DicomCheckCalledAet": True, "Plugins": [], "StorageCompression": False,
        "DicomAlwaysAllowEcho": True, "DicomAlwaysAllowStore": True, "DicomAlwaysAllowFind": True,
        "DicomAlwaysAllowGet": True, "DicomAlwaysAllowMove": False, "SaveJobs": False, "ConcurrentJobs": 1,
        "HttpThreadsCount": 4, "DicomThreadsCount": 2, "DicomScpTimeout": 30, "DeidentifyLogs": True,
        "UnknownSopClassAccepted": False, "StableAge": 1, "HttpsCACertificates": "", "DicomModalities": {},
        "OrthancPeers": {}, "LuaScripts": [],
    }
    config_path = directory / "orthanc.json"
    config_path.write_text(json.dumps(config))
    log = directory / "orthanc.log"
    with open(log, "wb") as handle:
        process = subprocess.Popen([binary, str(config_path)], stdout=handle, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, cwd=directory, env={**os.environ, "LANG": "C"})
    server = Orthanc(process, http_port, dicom_port, log)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"Orthanc stopped at start: {log.read_text(errors='replace')[-2000:]}")
        try:
            server.get("/system")
            with socket.create_connection(("127.0.0.1", dicom_port), timeout=1):
                return server
        except (urllib.error.URLError, ConnectionError, OSError):
            time.sleep(0.2)
    server.stop()
    raise RuntimeError(f"Orthanc did not answer within {START_TIMEOUT_S} s: {log.read_text(errors='replace')[-2000:]}")
