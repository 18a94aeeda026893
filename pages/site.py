"""Site: what this hospital's radiologists read, and what the model learns from it.

The reads so far (per class and reader, agreement with the model, Cohen's kappa), the setting that keeps read
films for site learning, then calibrate or adapt on the reads (or a labelled folder) with the cross-fitted figures
before and after, and the site profiles and points with activate, roll back, remove and the history. Admins act;
researchers see it all as a preview. Every action is checked and audited in ``xraycore``; this page holds
widgets only (``xraycore.app.site_view``).
"""
from __future__ import annotations

import shutil

import streamlit as st

from xraycore.access import policy as access
from xraycore.app import auth as webauth
from xraycore.app import catalog

identity = webauth.require(access.PREVIEW_OPERATING_POINT)
st.title("Site")
st.caption("Your radiologists' reads, and the model learning your site from them. Every figure of an adapted model "
           "is cross-fitted: measured on films its adaptation never saw.")
if note := catalog.full_install_note("site learning"):
    st.info(note)
    st.stop()

from xraycore.app import site_view  # noqa: E402 - after the full-install check
from xraycore.clinical import operating_points as operating
from xraycore.clinical import point_history, read_stats, site_reads
from xraycore.clinical.site_store import open_site_store
from xraycore.evaluation import site_calibration
from xraycore.evaluation.site_adaptation import DEFAULT_EPOCHS, METHODS, list_profiles  # torch-free
from xraycore.store.database import StoreUnavailable

MESSAGE_KEY = "site_message"
model_path = catalog.chosen_model_dir(st.session_state.get("model_path"), identity)
if model_path is None:
    st.info("No model is available yet.")
    st.stop()
admin = access.can(identity, access.CHANGE_OPERATING_POINT)
if not admin:
    st.info("Research preview: only an administrator may keep films, calibrate, adapt, activate, roll back or "
            "remove.",
            icon=":material/science:")


def act(action, success: str) -> None:  # noqa: ANN001 - a callable of no arguments
    """Run an admin action; keep its answer (or its one-sentence refusal) on the page until the next one."""
    try:
        done = action()
    except (ValueError, access.AccessDenied, StoreUnavailable) as error:
        st.session_state[MESSAGE_KEY] = ("error", str(error))
    else:
        st.session_state[MESSAGE_KEY] = ("success", success.format(done=done))


if message := st.session_state.get(MESSAGE_KEY):
    getattr(st, message[0])(message[1])

# ----------------------------------------------------------------------------- the reads so far
st.subheader("Reads so far")
try:
    store = open_site_store()
    stats = read_stats.reads_stats(store)
except StoreUnavailable as error:
    st.error(str(error))
    st.stop()
if not stats["reads"]:
    st.info("No reads yet: readers record them on Diagnose and the Worklist (or `python -m xraycore reads add`).")
else:
    agreement = stats["ai_agreement"]["ai_agreement_rate"]
    left, middle, right = st.columns(3)
    left.metric("Reads", stats["reads"])
    middle.metric("Films", stats["films"])
    right.metric("Agree with the model", "n/a" if agreement is None else f"{agreement:.1%}")
    st.dataframe([{"read": label, "reads": n} for label, n in sorted(stats["per_class"].items())], hide_index=True)
    st.dataframe(site_view.reader_rows(stats), hide_index=True, width="stretch")
    if stats["kappa"]:
        st.dataframe(site_view.kappa_rows(stats), hide_index=True)
    else:
        st.caption("Cohen's kappa appears once two readers have read the same films.")

keeping = site_reads.keep_films(store, identity)
wanted = st.toggle(site_reads.KEEP_FILMS_LABEL, keeping, key="keep_films", disabled=not admin,
                   help="Only kept films can teach the model. Off: reads are recorded without their pixels.")
if wanted != keeping:
    act(lambda: site_reads.set_keep_films(store, wanted, identity), "Read films are now "
        + ("kept for site learning." if wanted else "no longer kept."))
    st.rerun()

# ----------------------------------------------------------------------------- learn from the reads
st.subheader("Learn from the reads")
source = st.radio("Labelled films", ["the reads so far", "a folder of class sub-folders"], horizontal=True,
                  key="site_source")
folder_text = st.text_input("Folder (NORMAL/, PNEUMONIA/ …)", key="site_folder") if source != "the reads so far" else ""
left, middle, right = st.columns([2, 2, 1])
name = left.text_input("Name of the new point or profile", key="site_name", placeholder="ward-2027-01")
method = middle.selectbox("Adaptation", list(METHODS), key="site_method",
                          help="What learns the site: the last stage and head (default), the head only, the last "
                               "stage with the block before it, or everything.")
epochs = right.number_input("Epochs", 1, 100, value=None, key="site_epochs", placeholder=f"{DEFAULT_EPOCHS[method]}",
                            help="Empty: the method's default, the recipe chosen by cross-fitted figures.")


def learn(kind: str) -> None:
    """Calibrate or adapt on the chosen films; films exported from the reads are removed afterwards."""
    exported = None
    try:
        if source == "the reads so far":
            exported, said = site_view.export_for_learning(store)
            st.caption(said)
            folder = exported
        else:
            folder = access.inside_roots(folder_text, "site folder")
        if kind == "calibrate":
            act(lambda: site_calibration.calibrate_folder(model_path, folder, name.strip(), identity=identity),
                "Calibrated and active: {done[name]}.")
        else:
            act(lambda: site_view.adapt_with_progress(model_path, folder, name.strip(), method, epochs or None, identity),
                "Adapted and active: {done[name]}.")
    except (ValueError, access.AccessDenied) as error:
        st.session_state[MESSAGE_KEY] = ("error", str(error))
    finally:
        if exported is not None:
            shutil.rmtree(exported, ignore_errors=True)


left, right = st.columns(2)
if admin and not name.strip():
    st.caption("Name the new point or profile to calibrate or adapt.")
if left.button("Calibrate (threshold and temperature)", key="site_calibrate", disabled=not admin or not name.strip()):
    learn("calibrate")
    st.rerun()
if right.button("Adapt the network", key="site_adapt", type="primary", disabled=not admin or not name.strip(),
                help="Fine-tunes on the site's films (a few minutes); the original weights stay untouched."):
    learn("adapt")
    st.rerun()

# ----------------------------------------------------------------------------- profiles, points, history
st.subheader("Site profiles and operating points")

profiles = list_profiles(model_path)
if profiles:
    st.dataframe(site_view.profile_rows(profiles), hide_index=True, width="stretch")
else:
    st.caption("No site profile yet: adapt above, or `python -m xraycore adapt`.")
state = operating.load(model_path)
st.markdown(f"In use: **{state['active']}** · shipped: **{state['shipped']}**")
left, middle, right, far = st.columns([3, 1, 1, 1], vertical_alignment="bottom")
chosen = left.selectbox("Point or profile", list(state["points"]), index=list(state["points"]).index(state["active"]),
                        key="site_activate_pick")
if middle.button("Activate", key="site_activate", disabled=not admin or chosen == state["active"]):
    act(lambda: operating.activate(model_path, chosen, identity=identity), f"{chosen} is now in use.")
    st.rerun()
previous = point_history.previous_active(model_path)
if right.button("Roll back", key="site_roll_back", disabled=not admin or previous is None,
                help=f"Back to {previous}" if previous else "Nothing to roll back to."):
    act(lambda: point_history.roll_back(model_path, identity=identity), "Rolled back: {done} is in use again.")
    st.rerun()
kept = chosen in (operating.INTERNAL, state["active"], state["shipped"])
with far.popover("Remove", disabled=not admin or kept, width="stretch",
                 help="The point in use, the shipped one and the internal one are kept." if kept else None):
    st.write(f"Remove **{chosen}**? A site profile's adapted weights are deleted with it; the history keeps the entry.")
    if st.button(f"Remove {chosen}", key="site_remove", type="primary"):
        act(lambda: operating.remove(model_path, chosen, identity=identity), f"{chosen} was removed.")
        st.rerun()
with st.expander("History"):
    st.dataframe(site_view.history_rows(model_path), hide_index=True, width="stretch")
