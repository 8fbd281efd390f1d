//! The seed's sample orders, seeded at start unless turned off.

use crate::domain::{CustomerId, Money, NewOrder, OrderItem, OrderStatus};

fn item(name: &str, quantity: u32, cents: u64) -> OrderItem {
    OrderItem {
        name: name.to_owned(),
        quantity,
        unit_price: Money::from_cents(cents),
    }
}

fn draft(
    id: &str,
    customer: &str,
    status: OrderStatus,
    restaurant: &str,
    address: &str,
    items: Vec<OrderItem>,
) -> NewOrder {
    NewOrder {
        // Invariant: the literals below are valid ids.
        id: Some(id.parse().expect("sample ids are valid")),
        customer_id: CustomerId::try_from(customer.to_owned())
            .expect("sample customer ids are valid"),
        restaurant_name: restaurant.to_owned(),
        delivery_address: address.to_owned(),
        items,
        status,
        fulfillment: None,
    }
}

/// Order 101 (customer 1, confirmed), 102 (customer 2, preparing) and 103
/// (customer 1, ready), as the seed lists them.
pub(super) fn orders() -> Vec<NewOrder> {
    vec![
        draft(
            "101",
            "1",
            OrderStatus::Confirmed,
            "Luigi's Pizzeria",
            "12 Harbour Street, Springfield",
            vec![item("Margherita Pizza", 2, 1250), item("Tiramisu", 1, 600)],
        ),
        draft(
            "102",
            "2",
            OrderStatus::Preparing,
            "Burger Barn",
            "48 Elm Avenue, Springfield",
            vec![
                item("Classic Cheeseburger", 1, 1099),
                item("Sweet Potato Fries", 1, 450),
            ],
        ),
        draft(
            "103",
            "1",
            OrderStatus::Ready,
            "Sakura Sushi",
            "12 Harbour Street, Springfield",
            vec![
                item("Salmon Nigiri Set", 1, 1800),
                item("Miso Soup", 2, 300),
            ],
        ),
    ]
}
