"""The critic (corrector): checks each sentence of a draft against its cited passages."""
