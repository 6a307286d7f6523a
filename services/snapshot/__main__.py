from esdb_gater.services import main_for

main_for("snapshot")
