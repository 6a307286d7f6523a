from shared.runner import main_for

main_for("channel")
